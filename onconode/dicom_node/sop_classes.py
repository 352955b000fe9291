"""What OncoNode accepts over C-STORE: the SOP classes of a CT/MR study and the transfer syntaxes.

A PACS forwarding a CT or MR study also forwards what lives beside the images: localizers (CT
Image Storage), dose reports, other SRs, presentation states and secondary captures. They are
stored so the study on disk is the study that was sent; the analysis ignores them. Anything else
is refused at negotiation (the presentation context is rejected), which senders report cleanly.
Transfer syntaxes are accepted as proposed and stored as received; decoding happens at analysis.
"""

from __future__ import annotations

from pydicom import uid

IMAGE_STORAGE = frozenset({
    uid.CTImageStorage, uid.EnhancedCTImageStorage, uid.LegacyConvertedEnhancedCTImageStorage,
    uid.MRImageStorage, uid.EnhancedMRImageStorage, uid.EnhancedMRColorImageStorage,
    uid.LegacyConvertedEnhancedMRImageStorage,
    uid.SecondaryCaptureImageStorage, uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    uid.MultiFrameTrueColorSecondaryCaptureImageStorage, uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
})

SR_STORAGE = frozenset({
    uid.BasicTextSRStorage, uid.EnhancedSRStorage, uid.ComprehensiveSRStorage, uid.Comprehensive3DSRStorage,
    uid.XRayRadiationDoseSRStorage, uid.RadiopharmaceuticalRadiationDoseSRStorage,
    uid.KeyObjectSelectionDocumentStorage,
})

OTHER_STORAGE = frozenset({uid.GrayscaleSoftcopyPresentationStateStorage})

STORAGE_SOP_CLASSES = IMAGE_STORAGE | SR_STORAGE | OTHER_STORAGE

TRANSFER_SYNTAXES = (
    uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
    uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
    uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
    uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K, uid.RLELossless,
)

# The Verification SOP Class (PS3.4 A.4), for C-ECHO.
VERIFICATION = uid.UID("1.2.840.10008.1.1")
