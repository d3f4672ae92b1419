"""Running jobs: the worker loop, the child process that runs each job, and
the decisions between them."""
