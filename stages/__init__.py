"""The stages, one module each (decode, detect, infer, smooth, overlay, publish), with the parts they are made
of beside them (sources, detectors, tracking, smoothing filters)."""
