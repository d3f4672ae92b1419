"""The failed-job store: jobs that used up their tries, kept for a look and
a retry."""
