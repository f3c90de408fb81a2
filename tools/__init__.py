"""Tools that consume the stream (engine bridges, exporters): users of the wire protocol, beside the pipeline."""
