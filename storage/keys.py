"""Where each kind of object lives in the blob store. The one place that knows the layout."""


def file_key(project_id: str, file_id: str) -> str:
    return f"files/{project_id}/{file_id}"


def upload_prefix(project_id: str, upload_id: str) -> str:
    return f"uploads/{project_id}/{upload_id}/"


def upload_part_key(project_id: str, upload_id: str, part_id: str) -> str:
    return upload_prefix(project_id, upload_id) + part_id
