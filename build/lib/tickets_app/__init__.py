"""VibeLux support desk: tickets, SLA clocks, search, attachments and a staff web UI."""
