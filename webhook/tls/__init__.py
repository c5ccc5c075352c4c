"""Certificates: the webhook's CA and serving certificate, and keeping them in a Secret."""
