"""Classic image corruptions (Hendrycks & Dietterich, ICLR 2019) as a baseline test-set generator.

`apply.corrupt` wraps the maintained `imagecorruptions-imaug` package with per-call seeding; `job.CorruptJob`
(stage `corrupt`) writes corrupted Cityscapes crops with the generate stage's geometry and layout.
"""
