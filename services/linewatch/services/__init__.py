"""Services: one package per service (`linewatch.core.services` lists them). They share code only through the
layers below and the contract in `schemas/`, never by importing each other."""
