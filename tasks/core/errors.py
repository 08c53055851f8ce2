"""User-facing errors: one line, naming the file or key and what to do, never a stack trace."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's data, params or environment. The message is one actionable line."""


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI entry point: a UserError prints `error: <message>` to stderr and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
