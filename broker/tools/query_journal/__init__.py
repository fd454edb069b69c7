"""The query_journal tool: search a [[journals]] source (systemd journal files) in a journal worker."""
