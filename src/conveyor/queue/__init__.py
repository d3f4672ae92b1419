"""The queue: what a job is and how it is pushed."""
