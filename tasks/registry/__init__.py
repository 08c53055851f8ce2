"""The champion registry and the one deploy repository: promotion's gate and transaction, the Triton model folder,
and the model card every promoted version carries."""
