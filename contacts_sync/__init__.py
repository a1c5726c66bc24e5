"""harkd: contacts_sync."""
