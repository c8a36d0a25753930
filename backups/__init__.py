"""Backups and restore drills of the platform's stores (`vibelux-backup`)."""
