//! `Autodiff<B>` over a kernel backend: attention whose backward is the backend's
//! linear-memory one.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::TensorMetadata;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::{Kernels, default_scale};

/// The backward step registered by the forward: the saved output and log-sum-exp, and the
/// checkpointed inputs.
#[derive(Debug)]
struct AttentionBackward;

impl<B: Kernels> Backward<B, 3> for AttentionBackward {
    type State = (NodeId, NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (qid, kid, vid, out, lse, scale) = ops.state;
        let q: FloatTensor<B> = checkpointer.retrieve_node_output(qid);
        let k: FloatTensor<B> = checkpointer.retrieve_node_output(kid);
        let v: FloatTensor<B> = checkpointer.retrieve_node_output(vid);
        let (dq, dk, dv) = B::attn_backward(q, k, v, out, lse, dout, scale);
        if let Some(n) = node_q {
            grads.register::<B>(n.id, dq);
        }
        if let Some(n) = node_k {
            grads.register::<B>(n.id, dk);
        }
        if let Some(n) = node_v {
            grads.register::<B>(n.id, dv);
        }
    }
}

impl<B: Kernels, C: CheckpointStrategy> Kernels for Autodiff<B, C> {
    fn reads(dtype: burn::tensor::DType) -> bool {
        B::reads(dtype)
    }

    fn attn(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        let scale = default_scale(q.primitive.shape()[3]);
        match AttentionBackward
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (qid, kid, vid) = (
                    prep.checkpoint(&q),
                    prep.checkpoint(&k),
                    prep.checkpoint(&v),
                );
                let (out, lse) = B::attn_with_lse(q.primitive, k.primitive, v.primitive, scale);
                prep.finish((qid, kid, vid, out.clone(), lse, scale), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::attn(q.primitive, k.primitive, v.primitive)),
        }
    }

    fn attn_with_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // The output is tracked through `attn`; the log-sum-exp is a constant.
        let (_, lse) = B::attn_with_lse(
            q.primitive.clone(),
            k.primitive.clone(),
            v.primitive.clone(),
            scale,
        );
        (Self::attn(q, k, v), Self::from_inner(lse))
    }

    fn attn_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // First-order only: the gradients are constants of the graph.
        let (dq, dk, dv) = B::attn_backward(
            Self::inner(q),
            Self::inner(k),
            Self::inner(v),
            Self::inner(out),
            Self::inner(lse),
            Self::inner(dout),
            scale,
        );
        (
            Self::from_inner(dq),
            Self::from_inner(dk),
            Self::from_inner(dv),
        )
    }
}
