"""The query_logs tool: its arguments, the pattern language, engines, batches and reply."""
