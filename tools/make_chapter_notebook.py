"""Write notebooks/vgg.ipynb (cells only; run notebooks/execute.py to fill the outputs)."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# 使用重复元素的网络（VGG）

本笔记本配合《动手学深度学习》（Gluon 版）的 VGG 一节使用。书里的代码都在 `vgg` 包中实现，这里直接导入，
按照章节的顺序把每一步跑一遍，并保留一次真实完整训练的输出。

VGG 的想法很朴素：不再为每一层单独设计卷积核大小和步幅，而是把"若干个 3×3 卷积 + 一个 2×2 最大池化"
当作一个可以反复堆叠的积木（VGG 块）。每经过一个块，特征图的高和宽减半、通道数通常翻倍。"""),
    new_code_cell("""import json
import os
import platform

# 测试时设置 VGG_QUICK=1：只用几百张图、小尺寸、训练 1 轮，几秒钟跑完整本笔记本。
QUICK = os.environ.get('VGG_QUICK') == '1'

# 先导入 vgg 再导入 mxnet：vgg 会在 MXNet 加载前把 OpenMP 线程数设为 CPU 核数。
from vgg import (VGG11, load_data_fashion_mnist, narrow, plot_history, show_predictions,
                 train, try_gpu, vgg, vgg_block)
import mxnet as mx
from mxnet import gluon, init, nd"""),
    new_markdown_cell("""## VGG 块

`vgg_block(num_convs, num_channels)` 依次放 `num_convs` 个填充为 1 的 3×3 卷积层（激活函数为 ReLU），
最后接一个窗口 2×2、步幅 2 的最大池化层。填充为 1 的 3×3 卷积不改变高和宽，只有池化层让它们减半。
两个串联的 3×3 卷积的感受野与一个 5×5 卷积相同，参数却更少，这正是 VGG 偏爱小卷积核的原因。"""),
    new_code_cell("""blk = vgg_block(2, 128)
blk.initialize()
X = nd.random.uniform(shape=(2, 64, 16, 16))
print(blk(X).shape)  # 通道数变为 128，高和宽减半"""),
    new_markdown_cell("""## VGG 网络

网络由两部分组成：卷积部分是若干个 VGG 块，全连接部分与 AlexNet 相同（两个 4096 单元的隐藏层，各接丢弃率 0.5 的丢弃层，
再接输出层）。`conv_arch` 列出每个块的卷积层数和输出通道数。VGG-11 有 5 个块、8 个卷积层，加上 3 个全连接层共 11 层，
这就是论文表 1 中的配置 A，即 `vgg.VGG11`。"""),
    new_code_cell("""conv_arch = VGG11
print(conv_arch)
net = vgg(conv_arch, 1000)
net.initialize()
X = nd.random.uniform(shape=(1, 1, 224, 224))
for blk in net:
    X = blk(X)
    print(blk.name, 'output shape:\\t', X.shape)"""),
    new_markdown_cell("""5 个块各把高和宽减半：224 → 112 → 56 → 28 → 14 → 7。最后的 512×7×7 个特征展平后送入第一个全连接层，
仅这一层就有 25088×4096 ≈ 1.03 亿个权重，占整个网络参数的大头。"""),
    new_markdown_cell("""## 训练模型

完整的 VGG-11 在 CPU 上训练 Fashion-MNIST 太慢，章节的做法是把每个块的通道数除以 `ratio = 4`，得到一个窄得多的网络
（计算量约为原来的 1/16）。其余设置与章节一致：图像放大到 224×224，批量大小 128，Xavier 初始化，学习率 0.05 的小批量随机梯度下降，训练 3 轮。

与书中代码的区别只有两处：`net.hybridize(...)` 把网络编译成静态计算图，结果相同，速度更快；
`mx.random.seed(0)` 和 `seed=0` 固定初始化和打乱顺序，让这次运行可以复现（练习 2 直接引用它作为 224×224 的那一组）。"""),
    new_code_cell("""ratio = 4
small_conv_arch = narrow(conv_arch, ratio)  # 即 [(n, int(c / ratio)) for n, c in conv_arch]
print(small_conv_arch)
mx.random.seed(0)
net = vgg(small_conv_arch, 10)

lr, num_epochs, batch_size, resize, ctx = 0.05, 3, 128, 224, try_gpu()
max_samples = None
if QUICK:
    num_epochs, resize, max_samples = 1, 32, 384

net.initialize(init.Xavier(), ctx=ctx)
net.hybridize(static_alloc=True, static_shape=True)
trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': lr})
loss = gluon.loss.SoftmaxCrossEntropyLoss()
train_iter, test_iter = load_data_fashion_mnist(batch_size, resize=resize, max_samples=max_samples, seed=0)
history = train(train_iter, test_iter, net, loss, trainer, ctx, num_epochs)"""),
    new_code_cell("""# 记录这次运行所用的设备和每轮耗时（秒，含每轮之后的测试）
print('device:', ctx, '|', platform.processor() or platform.machine(), '|', os.cpu_count(), 'CPU cores')
print('resize:', resize, '| training images:', train_iter.num_examples)
for h in history:
    print('epoch %d: %.1f sec, %.1f training images/sec, test acc %.3f'
          % (h['epoch'], h['time'], h['images_per_sec'], h['test_acc']))
# 完整运行的结果另存一份，练习笔记本的练习 2 用它作为 224×224、3 轮的那一组
if not QUICK:
    os.makedirs('results', exist_ok=True)
    with open('results/chapter-run.json', 'w') as f:
        json.dump({'device': str(ctx), 'processor': platform.processor() or platform.machine(),
                   'cpu_count': os.cpu_count(), 'resize': resize, 'batch_size': batch_size,
                   'lr': lr, 'ratio': ratio, 'seed': 0, 'history': history}, f, indent=1)"""),
    new_markdown_cell("""## 学习曲线与预测结果

左图是每轮的平均训练损失，右图是训练集和测试集上的准确率。下面的网格取测试集前 18 张图：
每张图上面一行是预测类别，下面一行是真实类别，预测错的标为红色。"""),
    new_code_cell("""fig = plot_history(history, title='VGG-11 (ratio %d) on Fashion-MNIST' % ratio)"""),
    new_code_cell("""X, y = next(iter(test_iter))
fig = show_predictions(net, X, y, num_rows=2, num_cols=9, ctx=ctx)"""),
    new_markdown_cell("""## 小结

* VGG 用重复的"3×3 卷积 + 2×2 池化"块搭出整个网络，只需一张 `conv_arch` 表就能描述不同深度的版本（VGG-11/13/16/19）。
* 小卷积核叠得更深，在相同感受野下参数更少、非线性更多。
* 代价是计算量和显存：本包的 `vgg-exercises.ipynb` 用实测数据比较了 VGG 与 AlexNet 的开销。"""),
]

nb = new_notebook(cells=cells, metadata={
    'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
    'language_info': {'name': 'python'}})
nbformat.write(nb, 'notebooks/vgg.ipynb')
