"""Wire formats shared by the gateway and the replicas (OpenAI-compatible requests and answers)."""
