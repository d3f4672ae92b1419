"""Where jobs are stored. ``base`` states the contract; each other module is
one implementation."""
