"""Staff pages: sign-in, dashboard, participants, tablet mode, alerts, administration."""
