"""`/v1/me`: who the caller's key speaks for."""
