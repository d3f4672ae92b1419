"""The migration tool: timestamped files with ``up()`` and ``down()``, run in
batches and recorded in a table of the application's own database."""
