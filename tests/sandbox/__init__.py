"""Sandbox escape suite: hostile programs and payloads run confined, every attempt must be contained."""
