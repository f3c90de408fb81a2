"""Tools around a stream: the viewer, the render command, listen/replay/keys. Users of the protocol,
fastmetro/ and draw/; they never import the stages or the runtime."""
