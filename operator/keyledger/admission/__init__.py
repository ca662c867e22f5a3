"""The admission webhooks' non-kopf parts: their serving certificate and the rules
they enforce. The kopf handlers live in `keyledger.handlers.admission`."""
