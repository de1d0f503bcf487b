"""The Azurite fixture gives a working blob service (and fails, never skips, without one)."""

from azure.storage.blob import BlobServiceClient


def test_azurite_round_trip(azurite: str) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.get_container_client("fixture-check")
    container.create_container()
    container.upload_blob("a.txt", b"hello")
    assert container.download_blob("a.txt").readall() == b"hello"
    container.delete_container()
