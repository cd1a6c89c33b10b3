"""Probing what each cortical area of a pathway learned."""
