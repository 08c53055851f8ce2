"""headstart serve: the deploy repository behind the V2 inference protocol (REST and gRPC), as Triton serves it."""
