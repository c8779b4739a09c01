"""LLM Router: a gRPC gateway that sends each LLM call to the cheapest model that clears the bar."""
