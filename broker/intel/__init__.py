"""Threat-intel feeds compiled into the database the intel workers read (an operator command)."""
