//! The conformance suite of [`HostRuntime`].

use crate::ports::{
    ExportRequest, HostRuntime, ImportRequest, RuntimeErrorKind, StreamCoding, VolumeTarget,
    no_progress,
};
use crate::types::StackFiles;

/// What [`host_runtime_conformance`] needs from the environment of the runtime under test.
#[derive(Debug, Clone)]
pub struct RuntimeFixture {
    /// A stack that deploys and becomes healthy on this runtime. The stack must not exist yet.
    pub stack: StackFiles,
    /// The same stack with one service changed (the deploy must report it recreated).
    pub changed: StackFiles,
    /// A named volume the stack's deploy creates (engine name, e.g. `<stack>_data`).
    pub volume: String,
    /// A volume name that does not exist yet, to import into.
    pub scratch_volume: String,
}

/// Check every promise of the [`HostRuntime`] port against a runtime.
pub async fn host_runtime_conformance(rt: &dyn HostRuntime, fx: &RuntimeFixture) {
    let name = fx.stack.name.as_str();
    let snap = rt.snapshot().await.expect("snapshot");
    assert!(snap.online, "a reachable host reports itself online");
    assert_eq!(&snap.host, rt.host_id());
    assert!(
        !snap.stacks.contains_key(name),
        "the fixture stack must not exist yet"
    );
    assert!(rt.stack_status(name).await.unwrap().containers.is_empty());

    rt.write_stack_files(&fx.stack).await.expect("write files");
    assert_eq!(
        rt.read_stack_files(name).await.unwrap(),
        Some(fx.stack.clone()),
        "files round trip"
    );
    assert_eq!(rt.read_stack_files("no-such-stack").await.unwrap(), None);

    let first = rt.deploy(&fx.stack).await.expect("deploy");
    assert!(
        !first.created.is_empty(),
        "a first deploy creates services: {first:?}"
    );
    let health = rt.wait_healthy(name).await.expect("wait healthy");
    assert!(
        health.healthy(),
        "the fixture stack becomes healthy: {health:?}"
    );
    assert!(rt.stack_status(name).await.unwrap().all_running());
    let again = rt.deploy(&fx.stack).await.expect("second deploy");
    assert!(
        again.created.is_empty() && again.recreated.is_empty(),
        "a second deploy of the same files changes nothing: {again:?}"
    );
    let changed = rt.deploy(&fx.changed).await.expect("changed deploy");
    assert!(
        !changed.recreated.is_empty(),
        "a changed service is recreated: {changed:?}"
    );

    let snap = rt.snapshot().await.unwrap();
    let st = snap
        .stacks
        .get(name)
        .expect("the snapshot lists the deployed stack");
    assert!(
        st.volumes.iter().any(|v| v.name == fx.volume),
        "the snapshot lists the stack's volume"
    );
    assert!(snap.volumes.contains(&fx.volume));

    rt.stop_stack(name).await.expect("stop");
    rt.stop_stack(name).await.expect("stop is idempotent");
    assert!(
        !rt.stack_status(name).await.unwrap().any_running(),
        "stopped"
    );
    rt.start_stack(name).await.expect("start");
    rt.start_stack(name).await.expect("start is idempotent");
    assert!(
        rt.stack_status(name).await.unwrap().all_running(),
        "started again"
    );

    rt.stop_stack(name).await.unwrap();
    let export = rt
        .export_volume(&ExportRequest::new(&fx.volume))
        .await
        .expect("export");
    let source_labels = st
        .volumes
        .iter()
        .find(|v| v.name == fx.volume)
        .unwrap()
        .labels
        .clone();
    let scratch = VolumeTarget {
        name: fx.scratch_volume.clone(),
        labels: source_labels,
        expected_bytes: None,
    };
    // What a host does not take is refused before anything changes.
    let refused = |req: ImportRequest| async move {
        let data = futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"not a tar"))]);
        let err = rt
            .import_volume(&req, Box::pin(data), no_progress())
            .await
            .err()
            .unwrap_or_else(|| panic!("refused: {req:?}"));
        assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{req:?}: {err}");
        let snap = rt.snapshot().await.unwrap();
        assert!(
            !snap.volumes.contains(&req.target.name),
            "a refused import creates no volume: {req:?}"
        );
    };
    if !rt.stream_codings().contains(&StreamCoding::Zstd) {
        refused(ImportRequest::new(scratch.clone()).coded(StreamCoding::Zstd)).await;
    }
    if rt.resume().is_none() {
        refused(ImportRequest::new(scratch.clone()).resume_at(Some(0))).await;
    }
    let imported = rt
        .import_volume(
            &ImportRequest::new(scratch.clone()),
            export.stream,
            no_progress(),
        )
        .await
        .expect("import");
    let exported = export
        .manifest
        .take()
        .expect("the export's manifest once streamed");
    assert_eq!(
        exported.first_difference(&imported),
        None,
        "an imported volume equals its source"
    );
    assert!(
        rt.export_volume(&ExportRequest::new("dockmesh-no-such-volume"))
            .await
            .is_err(),
        "exporting a missing volume is an error"
    );
    rt.remove_volume(&fx.scratch_volume)
        .await
        .expect("remove volume");
    rt.remove_volume(&fx.scratch_volume)
        .await
        .expect("removing a missing volume is fine");
    assert!(
        !rt.snapshot()
            .await
            .unwrap()
            .volumes
            .contains(&fx.scratch_volume)
    );

    rt.remove_stack(name, false)
        .await
        .expect("remove keeping volumes");
    assert!(rt.stack_status(name).await.unwrap().containers.is_empty());
    assert!(
        rt.snapshot().await.unwrap().volumes.contains(&fx.volume),
        "volumes kept unless asked"
    );
    rt.remove_stack(name, true)
        .await
        .expect("remove with volumes");
    rt.remove_stack(name, true)
        .await
        .expect("remove is idempotent");
    assert!(
        !rt.snapshot().await.unwrap().volumes.contains(&fx.volume),
        "volumes removed when asked"
    );
    rt.remove_stack_files(name).await.expect("remove files");
    assert_eq!(rt.read_stack_files(name).await.unwrap(), None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    #[tokio::test]
    async fn the_fake_host_conforms() {
        let host = FakeHost::new("h1");
        let stack = StackFiles {
            name: "web".into(),
            compose: "v1".into(),
            env: None,
        };
        let changed = StackFiles {
            compose: "v2".into(),
            ..stack.clone()
        };
        let fx = RuntimeFixture {
            stack,
            changed,
            volume: "web_data".into(),
            scratch_volume: "scratch".into(),
        };
        host_runtime_conformance(&host, &fx).await;
    }
}
