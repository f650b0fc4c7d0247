"""`/v1/organization/projects/{project_id}/...`: the caller's own project only."""
