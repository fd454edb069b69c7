"""What a client can call: one package or module per tool, plus resources and prompts."""
