//! Volume transfer: one volume streamed from the source to the target, resumed where a cut
//! import waits, and verified by comparing manifests.

use super::{Driver, ProgressEvent};
use crate::migration::event::MigrationSpec;
use crate::ports::{
    ExportRequest, ImportRequest, Progress, RuntimeError, RuntimeErrorKind, VolumeTarget,
    shared_coding,
};
use crate::snapshot::VolumeUsage;
use std::sync::Arc;

impl Driver {
    /// Stream one volume from the source to the target and compare manifests; the bytes, the
    /// digest and the links that point outside the volume.
    ///
    /// When the target holds an import of the volume that broke off (a cut connection), the
    /// transfer goes on from the byte it reached. Cut again, it goes on again next time; when
    /// going on fails otherwise (the target no longer waits, the source cannot start there,
    /// the result does not verify), the volume is sent whole.
    pub(super) async fn transfer(
        &self,
        spec: &MigrationSpec,
        v: &VolumeUsage,
    ) -> Result<(u64, String, Vec<String>), RuntimeError> {
        let target = self.host(&spec.target).await?;
        let waiting = match target.resume() {
            Some(r) => r.import_resume_point(&v.name).await,
            None => Ok(None),
        };
        match waiting {
            Ok(Some(offset)) => match self.transfer_once(spec, v, Some(offset)).await {
                Ok(done) => return Ok(done),
                Err(e) if e.kind == RuntimeErrorKind::Unreachable => return Err(e),
                Err(_) => {}
            },
            Ok(None) => {}
            // Not back yet: asked again on the next attempt (a whole import now would drop
            // what waits there).
            Err(e) if e.kind == RuntimeErrorKind::Unreachable => {
                return Err(RuntimeError::new(
                    e.kind,
                    format!("resuming volume {}: {}", v.name, e.message),
                ));
            }
            // A target that cannot tell is sent the whole volume.
            Err(_) => {}
        }
        self.transfer_once(spec, v, None).await
    }

    /// One attempt at [`Driver::transfer`]: the whole volume, or from `resume` on.
    async fn transfer_once(
        &self,
        spec: &MigrationSpec,
        v: &VolumeUsage,
        resume: Option<u64>,
    ) -> Result<(u64, String, Vec<String>), RuntimeError> {
        let context = |what: &str, e: RuntimeError| {
            RuntimeError::new(e.kind, format!("{what} volume {}: {}", v.name, e.message))
        };
        let source = self.host(&spec.source).await?;
        let target = self.host(&spec.target).await?;
        let offset = resume.unwrap_or(0);
        // In a coding both hosts take, the stream goes from one to the other as it is.
        let coding = shared_coding(source.stream_codings(), target.stream_codings());
        let export = source
            .export_volume(&ExportRequest::new(&v.name).from_byte(resume).coded(coding))
            .await
            .map_err(|e| context("exporting", e))?;
        if let (Some(offset), Some(p)) = (resume, &self.progress) {
            p(ProgressEvent::VolumeResumed {
                id: spec.id,
                volume: v.name.clone(),
                offset,
            });
        }
        let progress: Progress = {
            let emit = self.progress.clone();
            let (id, volume, total) = (spec.id, v.name.clone(), v.bytes);
            Arc::new(move |bytes| {
                if let Some(p) = &emit {
                    p(ProgressEvent::VolumeBytes {
                        id,
                        volume: volume.clone(),
                        bytes: offset + bytes,
                        total,
                    });
                }
            })
        };
        let into = ImportRequest::new(VolumeTarget {
            name: v.name.clone(),
            labels: v.labels.clone(),
            expected_bytes: v.bytes,
        })
        .resume_at(resume)
        .coded(export.coding);
        let imported = target
            .import_volume(&into, export.stream, progress)
            .await
            .map_err(|e| context("importing", e))?;
        let exported = export
            .manifest
            .take()
            .map_err(|e| context("exporting", e))?;
        if let Some(diff) = exported.first_difference(&imported) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                format!(
                    "volume {} failed verification on the target: {diff}",
                    v.name
                ),
            ));
        }
        let outside_links = exported
            .outside_links()
            .into_iter()
            .map(|(path, target)| format!("{path} -> {target}"))
            .collect();
        Ok((exported.content_bytes(), exported.digest(), outside_links))
    }
}
