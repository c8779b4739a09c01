"""The gRPC surface: request validation, servicers, and the translation of errors to status."""
