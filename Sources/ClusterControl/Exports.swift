// ClusterControl's API includes the models, the client and the errors of OverlayAPI (which the
// CLI imports alone) and the manager's parts (store, PKI, scheduler): code that imports
// ClusterControl sees them too.
@_exported import OverlayAPI
@_exported import ClusterManager
@_exported import NodeAgent
