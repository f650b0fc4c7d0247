"""`/v1/organization/...`: OpenAI's administration routes, as far as one project may use
them on itself."""
