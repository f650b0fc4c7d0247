"""`/v1/organization/projects/{project_id}/api_keys`: the project's keys, made and revoked by
the project itself (the operator's `tuneserve keys` sees every project's)."""
