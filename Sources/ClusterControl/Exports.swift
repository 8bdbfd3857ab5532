// ClusterControl's API includes the models, the client and the errors of OverlayAPI (which the
// CLI imports alone): code that imports ClusterControl sees them too.
@_exported import OverlayAPI
