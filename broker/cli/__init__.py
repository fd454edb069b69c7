"""The bastion command: one module per subcommand."""
