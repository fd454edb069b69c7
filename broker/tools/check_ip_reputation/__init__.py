"""The check_ip_reputation tool: the address argument and the verdict."""
