"""Tools that consume the stream: the viewer, the render command, listen/replay/keys, engine bridges (vmc)
and exporters. Users of the protocol, fastmetro/ and draw/; they never import the stages or the runtime."""
