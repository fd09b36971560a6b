"""What ``jump`` and ``jumpctl`` share: the profile on disk, the API client, output."""
