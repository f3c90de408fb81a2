"""Tools that consume the stream (wire protocol, recordings): they import the protocol and `fastmetro/`,
never the stages or the runtime kernel."""
