"""Networks and the log-mel front end."""
