"""Drawing: meshes over pictures (rasteriser, colours), MP4 and OBJ writing. Used by stages and tools;
imports only the protocol and fastmetro/."""
