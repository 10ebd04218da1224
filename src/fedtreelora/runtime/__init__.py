"""Runtimes drive a method's rounds; the embedded one runs every client in this process."""
