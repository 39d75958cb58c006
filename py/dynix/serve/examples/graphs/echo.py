"""The echo graph: every service of `components/echo.py`, linked in the order requests flow."""

from components.echo import EchoPrefillWorker, EchoWorker, Frontend, Processor

Frontend.link(Processor).link(EchoWorker).link(EchoPrefillWorker)
