"""Glue between Conveyor and web frameworks; see :mod:`conveyor.integrations.flask`."""
