"""Tools that consume the stream (engine bridges, exporters): users of the wire protocol, beside the
pipeline. They import the protocol, `fastmetro/` and drawing, never the stages or the runtime kernel."""
