"""kopf handlers: decorators and argument plumbing only; the work is in `operations`."""
