"""The mathematics without torch (numpy only): the noise covariance table, the exact convex
quadratic and the two-weight geometry of the paper's Figure 1."""
