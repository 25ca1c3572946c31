"""ModelInterface: one contract, local and remote implementations."""
