"""People: built-in accounts, their sign-ins and API keys, and what each role may do."""
