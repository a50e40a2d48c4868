"""A deterministic procedural street-scene dataset that stands in for the real datasets in the tiny profile.

`render_scene` draws a street seen from a car (road, sidewalks, facades, trees, poles, signs, lights, cars,
people, bicycles, the ego hood) with a pinhole camera over a flat ground plane, so each pixel has a class and
a metric depth. `DemoDataJob` writes a clean Cityscapes-layout set and "real shift" sets made from different
scenes by physical simulation (fog by Koschmieder's law on that depth, night, rain, snow) in the ACDC layout,
an "india" set in the IDD layout (level3Ids) and a Road Anomaly-layout OOD set with unusual objects on the road.

Modules: `canvas` (the z-buffered drawing surface), `scene` (the street), `anomalies` (objects on the road),
`weather` (adverse conditions on a scene), `layouts` (the job that writes every dataset layout).
"""

from synthrel.data.demo.layouts import DemoDataJob
from synthrel.data.demo.scene import Scene, Style, render_scene

__all__ = ["DemoDataJob", "Scene", "Style", "render_scene"]
