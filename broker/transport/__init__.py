"""How MCP reaches the broker: the SDK adapter, stdio, Streamable HTTP, screening, sd_notify."""
